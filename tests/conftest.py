"""Shared fixtures: Pulumi mocks that record every registration, and a runner for the whole program."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MANIFESTS = SHARED / "calico-manifests"
SHARED_MISSING_REASON = f"{SHARED} is absent: the real upstream manifests live there"


def real_manifest_paths() -> list[Path]:
    """Return the real upstream calico.yaml files, oldest release first (empty when ../shared is absent)."""
    return sorted(MANIFESTS.glob("v*/calico.yaml"), key=lambda p: tuple(int(x) for x in p.parent.name[1:].split(".")))


def load_shared_cases(kind: str | None = None) -> list[dict[str, Any]]:
    """Return the cases of ../shared/cases/cases.yaml, optionally only those of one kind.

    The file is not valid YAML as a whole (some `input:` lines hold an unquoted `": "`), so each case is
    parsed on its own, and a case that still fails keeps its fields as raw text.
    """
    path = SHARED / "cases" / "cases.yaml"
    if not path.is_file():
        return []
    cases: list[dict[str, Any]] = []
    blocks = re.split(r"(?m)^(?=- id:)", path.read_text(encoding="utf-8"))
    for block in blocks:
        if not block.startswith("- id:"):
            continue
        try:
            case = yaml.safe_load(block)[0]
        except yaml.YAMLError:
            case = {}
            field_name = ""
            for line in block.splitlines():
                match = re.match(r"^(?:- |  )(\w+): ?(.*)$", line)
                if match:
                    field_name = match.group(1)
                    case[field_name] = match.group(2)
                elif field_name:
                    case[field_name] += " " + line.strip()
        if kind is None or case.get("kind") == kind:
            cases.append(case)
    return cases


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that decode YAML for `kubernetes:yaml:decode` as the provider does, and record every resource."""

    resources: list[pulumi.runtime.MockResourceArgs] = field(default_factory=list)
    command_stdout: Callable[[pulumi.runtime.MockResourceArgs], str | None] = lambda args: (
        '{"architecture": "arm64", "adminConf": true, "kubectl": "/usr/bin/kubectl", "warnings": []}'
        if args.name.endswith("-preflight")
        else ""
    )
    """Returns the stdout a pulumi-command Command reports; preflights report an arm64 node by default."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.resources.append(args)
        outputs = dict(args.inputs)
        if args.typ in ("command:remote:Command", "command:local:Command"):
            stdout = self.command_stdout(args)
            if stdout is not None:
                outputs["stdout"] = stdout
                outputs["stderr"] = ""
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "kubernetes:yaml:decode":
            documents = [doc for doc in yaml.safe_load_all(args.args["text"]) if doc]
            return {"result": documents}, []
        raise NotImplementedError(f"the mocks implement no invoke {args.token}")

    def named(self, name: str, typ: str | None = None) -> pulumi.runtime.MockResourceArgs:
        """Return the registered resource called `name` (of type `typ`); fail naming the ones that exist."""
        found = [r for r in self.resources if r.name == name and (typ is None or r.typ == typ)]
        assert found, f"no resource named {name!r}; registered: {sorted(r.name for r in self.resources)}"
        return found[0]

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        """Return the registered resources of one type token."""
        return [resource for resource in self.resources if resource.typ == typ]


@dataclass
class Registration:
    """The engine-side view of one registration: its type, parent and dependencies."""

    name: str
    typ: str
    parent: str | None
    """Name of the parent resource, or None for a child of the stack."""
    dependencies: set[str]
    """Names of the resources it depends on (explicit depends_on and input dependencies)."""


def _name_of_urn(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _is_stack(urn: str) -> bool:
    return urn.split("::")[2].split("$")[-1] == "pulumi:pulumi:Stack"


class RecordingMonitor(MockMonitor):
    """MockMonitor that also records each registration's parent and dependencies, which Mocks never see."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.registrations: dict[str, Registration] = {}
        """The last registration of each name (a ServiceAccount and a DaemonSet may share one)."""
        self.all_registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        dependencies = set(request.dependencies)
        for property_dependencies in request.propertyDependencies.values():
            dependencies.update(property_dependencies.urns)
        registration = Registration(
            name=request.name,
            typ=request.type,
            parent=_name_of_urn(request.parent) if request.parent and not _is_stack(request.parent) else None,
            dependencies={_name_of_urn(urn) for urn in dependencies},
        )
        self.registrations[request.name] = registration
        self.all_registrations.append(registration)
        return super().RegisterResource(request)


@dataclass
class ProgramRun:
    """What one run of the program registered and exported."""

    mocks: RecordingMocks
    monitor: RecordingMonitor
    outputs: dict[str, Any]

    def depends_on(self, name: str, other: str) -> bool:
        """Tell whether resource `name` depends on `other`, directly or through its parents' dependencies."""
        seen: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop()
            if current in seen or current not in self.monitor.registrations:
                continue
            seen.add(current)
            registration = self.monitor.registrations[current]
            if other in registration.dependencies:
                return True
            pending.extend(registration.dependencies)
        return False


def run_git(root: Path, *args: str) -> str:
    """Run git in the scratch repository `root` with a fixed identity; fail the test when git fails."""
    result = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"git {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def stack_config(stack: str = "dev") -> dict[str, Any]:
    """Return a stack file's `calico:` values by short key, as the tests' starting point."""
    with open(REPO / f"Pulumi.{stack}.yaml", encoding="utf-8") as file:
        document = yaml.safe_load(file)
    return {key.removeprefix("calico:"): value for key, value in document["config"].items()}


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_program(
    values: Mapping[str, Any],
    *,
    secret_keys: tuple[str, ...] = (),
    mocks: RecordingMocks | None = None,
    preview: bool = False,
) -> ProgramRun:
    """Run components.program.run under the Pulumi mocks with `values` as the stack's calico: config.

    Like the Pulumi CLI, the declared defaults of Pulumi.yaml are applied first.
    """
    from components import program
    from components.stackconfig import load_schema

    mocks = mocks or RecordingMocks()
    config: dict[str, str] = {}
    for key, declaration in load_schema().items():
        if declaration.has_default:
            config[f"calico:{key}"] = _encode(declaration.default)
    for key, value in values.items():
        config[f"calico:{key}"] = _encode(value)

    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="calico", stack="dev", preview=preview, monitor=monitor)
    runtime_config.set_all_config(config, [f"calico:{key}" for key in secret_keys])
    exported: dict[str, Any] = {}
    original_export = pulumi.export

    def capture(name: str, value: Any) -> None:
        exported[name] = value
        original_export(name, value)

    pulumi.export = capture  # type: ignore[assignment]
    try:

        @pulumi.runtime.test
        def execute() -> pulumi.Output[dict[str, Any]]:
            program.run()
            return pulumi.Output.from_input(exported)

        resolved: dict[str, Any] = {}

        @pulumi.runtime.test
        def collect() -> pulumi.Output[None]:
            return pulumi.Output.from_input(exported).apply(resolved.update)

        execute()
        collect()
    finally:
        pulumi.export = original_export  # type: ignore[assignment]
    return ProgramRun(mocks, monitor, resolved)


@pytest.fixture
def program_runner() -> Iterator[Callable[..., ProgramRun]]:
    """Provide run_program and restore Pulumi's global config and settings afterwards."""
    saved_config = dict(runtime_config.CONFIG.get())
    saved_secrets = set(runtime_config._SECRET_KEYS.get())
    # Without calico:sshPrivateKey the nodes are reached through ssh-agent; the mocks never dial.
    saved_agent = os.environ.get("SSH_AUTH_SOCK")
    os.environ.setdefault("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
    yield run_program
    if saved_agent is None:
        os.environ.pop("SSH_AUTH_SOCK", None)
    runtime_config.set_all_config(saved_config, list(saved_secrets))
    runtime_settings.reset_options()
